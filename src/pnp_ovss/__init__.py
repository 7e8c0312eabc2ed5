"""pnp-ovss: training-free open-vocabulary semantic segmentation (PnP-OVSS) as a Snakemake workflow."""

__version__ = "0.1.0"
