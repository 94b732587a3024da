"""Writing source files: ``h3pipe sources inspect`` reads a raster or STAC collection
(:mod:`.sampling`), guesses what it holds (:mod:`.guessing`) and drafts the YAML
(:mod:`.drafting`); :func:`~h3pipe.authoring.inspect.inspect_location` ties them together.
Nothing here runs during a pipeline run."""
