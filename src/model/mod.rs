//! Neural networks: trainable small CNN, ResNet and EfficientNet-Lite, weight loading.
