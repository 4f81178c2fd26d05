"""One decode path: search over ids, the ``Translator``, the ONNX backend and its graphs."""
