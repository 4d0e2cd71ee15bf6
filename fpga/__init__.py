"""FPGA flows: board tops, builds with the open toolchain, host drivers (to come)."""
