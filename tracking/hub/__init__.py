"""The hub: what the map's connections see, over the SignalR JSON hub protocol.

``protocol`` is the codec and ``session`` one connection's conversation (both
pure); ``map_hub`` holds the methods clients invoke; ``consumer`` wires a
session to its WebSocket, the fan-out and the database; ``fanout`` carries
each cell's updates to the web processes; ``publishing`` is the one place that
sends them; ``tokens``, ``views`` and ``routing`` are the ways in.
"""
