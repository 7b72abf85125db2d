"""segexport"""
