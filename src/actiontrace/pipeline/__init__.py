"""The pipeline: ended flow parts from the buffer to storage, on a thread of its own.

Internal (every module is private). The buffer, the writer, the overflow journal and its
replay, and the writer's part in process life (fork, exit). docs/architecture.md.
"""
