"""Delivery channels: one module per channel, all behind ``base.DeliveryChannel``."""
