"""Image sets: folders of stimulus images (listing, stable ids, the decoding policy) and the embedded demo set."""
