"""Forecasting a run before it starts, for ``h3pipe plan`` and the run heading: what it
would do (:mod:`~h3pipe.forecast.outlook`), read (:mod:`~h3pipe.forecast.estimates`) and
cost (:mod:`~h3pipe.forecast.costs`)."""
