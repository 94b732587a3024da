"""Readers of the data a pipeline consumes: rasters on one pixel grid
(:mod:`~h3pipe.sources.raster`), STAC collections placed on that grid
(:mod:`~h3pipe.sources.stac`) and vector sources (:mod:`~h3pipe.sources.vector`)."""
