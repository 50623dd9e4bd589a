"""Background worker process: inference in a separate, warm, cancellable process.

``python -m UNetSigmoidSegLib.worker`` is the process (``server``: the command loop around the process's
``runners.host.EngineHost``; ``execute``: one command through it). ``runners.worker.WorkerRunner`` — the client,
a ``Runner`` of the run contract — starts, feeds, watches and kills it; ``protocol`` is the JSON-lines message format
between them and ``handoff`` moves arrays as raw ``.npy`` files in a private temp folder. Knows nothing of MRML or Qt.
"""
