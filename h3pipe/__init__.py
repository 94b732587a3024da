"""h3pipe: declarative pipelines from geospatial data to exact statistics on the H3 grid."""

__version__ = "0.1.0"
