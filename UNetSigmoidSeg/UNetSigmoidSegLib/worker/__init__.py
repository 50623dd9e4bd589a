"""Background worker: inference in a separate, warm, cancellable process.

``python -m UNetSigmoidSegLib.worker`` is the process (``server``, running each command with ``execute``);
``client.WorkerRunner`` — the ``Runner`` of the run contract — starts, feeds, watches and kills it;
``protocol`` is the JSON-lines message format between them and ``handoff`` moves arrays as raw ``.npy``
files in a private temp folder. Knows nothing of MRML or Qt:
Slicer, the CLI (``--worker``) and the tests use the same code.
"""
