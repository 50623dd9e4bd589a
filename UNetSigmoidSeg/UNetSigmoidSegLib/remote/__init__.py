"""Remote GPU server and its client, on the run contract.

Server side (needs FastAPI + uvicorn: ``pip install unetsigmoidseg[server]``): ``serve`` (the CLI command),
``server`` (the HTTP API and its token / size guard), ``jobs`` (queue and executor: one job at a time through the
engine's ``load_model`` / ``segment``), ``store`` (the models folder, by name). Client side (standard library +
numpy, so Slicer needs nothing more): ``client.RemoteRunner`` (the ``Runner``), ``job.RemoteJob`` (the ``Job``),
``follow`` (a run's network steps), ``transport`` (``http.client``). Both: ``wire`` (the compressed body framing of
``to_dict`` / ``to_wire`` data) and ``tokens``.
"""
