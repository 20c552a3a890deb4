"""dermgan: reproducible GAN synthesis of clinical skin images (DermGAN, MelanoGANs, Furger et al.)."""

__version__ = "0.1.0"
