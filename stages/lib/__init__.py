"""Pure, tested functions that the stages share."""
