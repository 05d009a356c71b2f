"""postbacks"""
