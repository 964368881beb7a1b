"""What a run leaves on disk: folders that appear only when complete (staging, markers, JSON) and the
plots."""
