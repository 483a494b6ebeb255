# docker-bake.hcl — the cluster's images, built across every HC1 by the buildx builder
# "@BUILDER@" and pushed to the cluster registry as REGISTRY/NAME:TAG.
# Written by hc1img from the profile's [builds] section. Run it with `hc1-bake` (which sets
# TAG to today's date, YYYYMMDD); each image's sources are in SRC/NAME (a Dockerfile there).
# Images built on the base image say `FROM base` in their Dockerfile: the `contexts` entry
# makes that the base target's result, so the base is built first.

variable "REGISTRY" {
  default = "@REGISTRY@"
}

variable "TAG" {
  default = "latest"
}

variable "SRC" {
  default = "@SRC@"
}

group "default" {
  targets = [@TARGETS@]
}

target "_hc1" {
  platforms = [@PLATFORMS@]
}
