"""Any source -> ``prompt``/``chosen``/``rejected`` pairs: dataset adapters, files, held-out splits, mixtures.

``dpo_hub.data:UltraFeedback`` (and ``HHRLHF``, ``Preferences``) stay importable here for plugin entry points.
"""

from dpo_hub.data.adapters import (
    ADAPTERS,
    HHRLHF,
    DataAdapter,
    PreferenceData,
    Preferences,
    Selection,
    UltraFeedback,
    prepare,
)

__all__ = [
    "ADAPTERS",
    "HHRLHF",
    "DataAdapter",
    "PreferenceData",
    "Preferences",
    "Selection",
    "UltraFeedback",
    "prepare",
]
