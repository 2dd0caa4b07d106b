"""LoTSS data: catalogue checks, mosaic access, cutouts and the DR2 download.

Modules: :mod:`~radiogen.lotss.catalogue`, :mod:`~radiogen.lotss.mosaic`,
:mod:`~radiogen.lotss.cutouts`, :mod:`~radiogen.download`; the
selection and preprocessing steps live beside them.
"""
