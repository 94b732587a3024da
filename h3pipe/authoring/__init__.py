"""Writing source files: ``h3pipe sources inspect`` reads a raster or STAC collection, guesses
what it holds and drafts the YAML (:func:`~h3pipe.authoring.inspect.inspect_location`).
Nothing here runs during a pipeline run."""
