"""`charlm serve`: a model behind an HTTP API that OpenAI clients speak, with a playground page.

    protocol.py   the requests checked field by field, the answers in OpenAI's shapes, the limits
    app.py        the Starlette routes, the API key, the body limit
    metrics.py    GET /metrics in Prometheus's text format
    server.py     loading, uvicorn, graceful shutdown, watching a run for a new best checkpoint
    playground.html  the page at GET /: one self-contained file, no scripts from anywhere else

The batching itself is a library component, `charlm.inference.engine`. Needs the `serve` extra
(`pip install 'charlm[serve]'`: Starlette and uvicorn).
"""
