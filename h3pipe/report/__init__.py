"""Pictures of runs and datasets: maps, charts and the HTML report."""
