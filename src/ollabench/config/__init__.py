"""The configuration: `schema` (typed validation of the composed config), `options` (the option
names, types and ranges a profile may set) and `overrides` (the Hydra overrides that turn one
config into another)."""
