"""The shapes world: the synthetic domain vidsift's demo model is trained and measured on.

Real CLIP weights cannot be downloaded offline, so vidsift proves search, tagging and zero-shot
classification on videos whose ground truth is known exactly (spec: docs/shapes-world.md). None of
this is the product: the product (pipeline/) indexes and searches any archive; this subpackage only
draws, encodes and labels the synthetic one, and supplies its vocabulary to evaluation and training.

- ``world``: the vocabulary (colours, shapes, labels, the held-out split, caption phrasings)
- ``spec``: ``SceneSpec`` / ``VideoSpec`` and the spec's bounds
- ``draw``: frames drawn with numpy (object poses, masks, noisy backgrounds)
- ``encode``: frames to a real video file with PyAV (``render_video``)
- ``archive``: random specs and whole archives (``synthesize_archive``)
- ``manifest``: the ground truth file, written and read in one place
- ``training_data``: captioned frames of an archive for ``vidsift train``
- ``evaluation``: the world's label set and split, as evaluation takes them

Nothing is imported here: ``encode`` loads PyAV, which only rendering needs.
"""
