// AdapterVision: image decoding, PIL-exact preprocessing and the CLIP ViT visual tower.
