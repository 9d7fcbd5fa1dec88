"""Pricing: price sources, their aggregation, credit maths and signed quotes."""
