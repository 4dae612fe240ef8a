"""The API's FastAPI routers, one module per area: commands, reads, health.

Routes are module-level functions; the services they call hang off ``app.state`` (built by
:func:`gateway.app.create_app`).
"""
