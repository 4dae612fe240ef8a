"""The engine's Kafka adapter: consume ``orders``, apply, publish ``engine-output``.

This subpackage is the only part of ``engine`` that does I/O; the core never imports it.
"""
