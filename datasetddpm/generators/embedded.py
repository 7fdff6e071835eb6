"""The embedded DDPM's UNet and noise schedule: what `train-ddpm` builds when no architecture is given, and
what the embedded preset names (`presets` re-exports both). Kept with the backends so that the trainer
needs nothing from the application layer."""

# The embedded UNet: 1.06M parameters, 32 px, three levels (32/64/64 channels), one resnet per
# level, no attention. Sized so that training fits a background CPU run and DDIM-50 sampling of
# several hundred images fits the demo on a slow 2-core day.
EMBEDDED_UNET = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
)
EMBEDDED_SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
