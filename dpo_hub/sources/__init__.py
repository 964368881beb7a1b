"""Where models, tokenizers and datasets come from: the Hub, local paths, GGUF files, ``auto`` (the Hub, else
the embedded default) and the real stand-ins fetched with pip when the Hub is out of reach."""
