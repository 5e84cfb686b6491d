"""kdiff: blind image deblurring by kernel diffusion (Sanghvi, Chi, Chan, "Kernel Diffusion")."""

__version__ = "0.1.0"
