"""Pure tensor maths: the switch's statistics and decision (switching) and the losses (losses)."""
