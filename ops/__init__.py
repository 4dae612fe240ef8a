"""Operations tools: the embedded broker launcher, the stack supervisor, the consumer-lag
exporter, the load generator and its workload.

They may import the services and the shared kernel, never the composition root
(:mod:`entrypoints`).
"""
