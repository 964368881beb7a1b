"""Export: a run as GGUF files for llama.cpp and Ollama, written by llama.cpp's own converter and verified.

``converter``: llama.cpp's converter scripts fetched from the pinned llama-cpp-python sdist into the cache;
``verify``: the GGUF loaded back against the merged model; ``modelfile``: the Ollama ``Modelfile``;
``gguf``: ``export_gguf`` and ``push_gguf``; ``llama_cpp``: llama.cpp itself built from the same sdist,
running a GGUF (greedy tokens) for the slow check.
"""
