"""The recording side: what a decorated call and a flow run on the application's thread.

Internal (every module is private; the public names are re-exported by ``actiontrace``).
Nothing here imports the pipeline below the buffer or the storages
(docs/architecture.md; ``tests/test_imports.py`` checks it).
"""
