"""The one error models/ raises for a model that cannot be had (imports nothing heavy, so any
layer can recognise it without importing torch)."""


class ModelUnavailableError(RuntimeError):
    """The model, its weights, its tokenizer or a package it needs cannot be had; the message
    names the model, the cause and what to do, in one line."""
