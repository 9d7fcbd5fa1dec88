"""Price sources, one file each, all implementing ``base.PriceSource``."""
