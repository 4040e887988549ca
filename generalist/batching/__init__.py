"""Examples -> model batches: tokenising with the model's processor, each family's token layout,
padding, label masks, length grouping, and the losses over a batch's labels."""
