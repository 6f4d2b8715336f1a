"""SOC models sharing one interface (see `base.DepthModel`)."""
