"""The one composition root: builders that wire each service from the settings
(:mod:`entrypoints.bootstrap`), the gateway process (:mod:`entrypoints.gateway`) and the
``exchange`` CLI (:mod:`entrypoints.cli`). Nothing imports this package.
"""
