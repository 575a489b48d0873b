"""Networks: MMSDNet (disentangle, align, fuse) and the learned baselines it is compared with."""
