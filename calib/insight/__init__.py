"""What leads see: the decision dashboard, judge and annotator diagnostics, plots, the sign-off report. The top library layer."""
