"""The simulated analog in-memory-computing chip, split by concept.

- `device`: device settings -> aihwkit RPU config and PCM noise model; the tile size.
- `conversion`: a digital network -> aihwkit tiles, input-range calibration, stored tiles loaded back.
- `chips`: the chip lifecycle (programming and drift), `ChipKey`, the one `ChipCache`, chip and read seeds.
- `chip_store`: programmed chips kept on disk between runs (safetensors, size-bounded, never unpickled).
- `periphery`: the maths of a tile read (DAC/ADC, clipping, output and PCM read noise, seeded reads).
- `fast_layers`: fast inference layers built on `periphery`, and `fast_chip`.
- `hwa_forward`: the training-time fast forward (with gradients) for hardware-aware training.
"""
