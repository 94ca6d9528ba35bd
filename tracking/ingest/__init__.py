"""Ingestion: event bodies from a source are parsed, stored in batches, then handed on.

``sources`` read bodies (a file, the simulated fleet, Azure Event Hubs);
``pipeline`` runs each batch through ``store`` (parse, validate, one
transaction, written by ``bulk``) and hands what moved to the publisher it
was given. Nothing here imports the hub: the commands wire the two together.
"""
