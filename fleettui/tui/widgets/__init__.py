"""Small widgets of the app."""
