"""Model lifecycle on the edge: signed bundles verified, stored, activated atomically, rolled back."""
