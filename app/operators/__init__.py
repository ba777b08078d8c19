"""Operators of the AISpleenSegApp (holoscan / MONAI Deploy App SDK 4). One operator per module."""
