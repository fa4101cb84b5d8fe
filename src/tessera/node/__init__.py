"""Custodian node service (L3): table shares, signed MPC jobs, MPyC party processes."""
