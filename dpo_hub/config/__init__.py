"""The typed pieces a recipe is made of: presets (LoRA, DPO, generation), the model group, any trl/peft
field passed through, typed values, loss types and tracker names. Pure data: nothing here loads a model."""
