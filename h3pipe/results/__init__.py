"""What the store holds and what leaves it: runs (:mod:`~h3pipe.results.runs`), the source
catalog (:mod:`~h3pipe.results.sources`), datasets exported as files
(:mod:`~h3pipe.results.formats`, :mod:`~h3pipe.results.layouts`,
:mod:`~h3pipe.results.outputs`)."""
