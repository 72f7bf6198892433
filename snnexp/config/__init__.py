"""Config schemas (``schema``), their Hydra registration (``store``) and checks (``validate``)."""
