"""Head models, the multi-view rasterizer, generators and the generator worker."""
