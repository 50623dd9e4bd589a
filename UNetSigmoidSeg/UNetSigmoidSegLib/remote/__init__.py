"""The remote GPU server (its client is ``runners.remote.RemoteRunner``), on the run contract.

Needs FastAPI + uvicorn (``pip install unetsigmoidseg[server]``): ``serve`` (the CLI command), ``server`` (the HTTP
API and its token / size guard), ``jobs`` (queue and executor: one job at a time through the engine host),
``store`` (the models folder, by name, and the server's ``EngineHost``), ``tokens`` (also read by the client). The
body framing both sides use is ``contract.wire``.
"""
