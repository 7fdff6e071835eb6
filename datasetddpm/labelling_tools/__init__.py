"""From the toolkit to a labelling tool and back: Label Studio imports with pre-annotations (brush RLE),
CVAT's "Segmentation mask 1.1", and `import-annotations`, which turns their exports into a labelled folder."""
